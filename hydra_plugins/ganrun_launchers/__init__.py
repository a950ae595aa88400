"""ganrun's Hydra launchers (Hydra finds plugins only below the ``hydra_plugins`` package)."""
