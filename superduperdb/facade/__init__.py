"""The parts of the :class:`~superduperdb.collection.Collection` facade beyond pymongo.

Each mixin is a group of thin public methods that delegate to a service
(:mod:`superduperdb.services`); :class:`Collection` inherits them all.

Floor: the facade (with ``client``, ``collection``, ``cursor``, ``results``); never runs on
workers. May import ``services`` and every floor below; the methods only delegate.
"""
