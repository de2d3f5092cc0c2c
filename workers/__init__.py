"""Background work: the outbox projector, the embedding filler and the graph rebuild.

Workers depend on `stores` only, never on `schema` or `resolvers`: they run beside
requests (or from the command line), not inside them.
"""
