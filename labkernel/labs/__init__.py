"""Labs: definitions (``lab.toml``, Killercoda scenarios), the catalog, checks, warm
pools, and the lab session that runs a definition around a ``Session``."""
