"""synthbench plugin: sean (under construction)."""
