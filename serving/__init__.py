"""The recall-plus-ranking service and what it reads online."""
