"""Built-in pixgen plugins, registered through the pixgen entry-point group."""
