"""Identity resolution: standardise source records, infer column roles, match them with Splink.

``standardise`` cleans values at the point of entry, ``roles`` infers what each column holds and
turns the roles into Splink settings (data, engine-neutral), ``unify`` runs the match on files.
"""
