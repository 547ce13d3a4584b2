"""One module per kind of resource; each registers an ``Exporter`` by kind."""
