"""The parts of the :class:`~superduperdb.collection.Collection` facade beyond pymongo.

Each mixin is a group of thin public methods that delegate to a service
(:mod:`superduperdb.services`); :class:`Collection` inherits them all.
"""
