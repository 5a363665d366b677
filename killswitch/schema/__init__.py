"""Config primitives below the rules: located YAML nodes, typed readers, the common rule entry.

Imports go one way: :mod:`killswitch.rules` → this package; :mod:`killswitch.config` →
the rule registry and this package. Nothing here imports a rule or the loader.
"""
