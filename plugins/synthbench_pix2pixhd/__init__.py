"""synthbench plugin: pix2pixhd (under construction)."""
