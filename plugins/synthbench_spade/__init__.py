"""synthbench plugin: spade (under construction)."""
