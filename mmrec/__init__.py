"""mmrec: the shared core (settings, paths, world vocabulary, CLI) that every stage imports."""
