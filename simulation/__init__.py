"""Closing the loop on the synthetic world: simulated shoppers through the served bento.

`mmrec simulate` (simulation/cli.py) runs an online A/B for N days through the platform's own
path (bento -> /events -> features -> training -> index -> bento), the world's hidden truth
drawing the clicks (truth.py), arms by a hash of the user id (arms.py), the loop itself
(loop.py), and the report with bootstrap intervals and the gap to the oracles (report.py).
Above serving/ (it builds and serves bentos), below cli/; never packed in the bento.
"""
