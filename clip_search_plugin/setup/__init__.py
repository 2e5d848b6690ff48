"""Setting up the engine's own Python environment: the plan, the installer, its log, the torch build."""
