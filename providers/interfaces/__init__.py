"""One module per provider interface: object_store, host, compute, dns.

The engine sees only these types; every implementation of one passes its
contract suite in ``tests/contract/``.
"""
