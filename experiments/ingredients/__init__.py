"""One Sacred ingredient per component. Each has documented config (shown by ``print_config``), a ``fast`` named
config for smoke tests, a config hook that validates its values (and fills ``None`` defaults from the arch) before
any run starts, and ``@capture``d builders. Ingredient order matters: ``arch`` comes first, since the others'
defaults depend on it."""
