"""synthbench plugin: ours (under construction)."""
