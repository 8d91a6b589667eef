"""The root `mmrec` command line: mounts every stage's `<stage>/cli.py` (`cli.main:app`)."""
