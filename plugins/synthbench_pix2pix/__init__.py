"""synthbench plugin: pix2pix (under construction)."""
