"""pixgen/shapes: a small demonstration CLIP trained on procedurally drawn, captioned shapes."""
