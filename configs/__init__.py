"""The YAML configs, shipped inside the package so wheel installs find them."""
