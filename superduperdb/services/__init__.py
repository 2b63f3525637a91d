"""Client-side services the Collection facade delegates to.

The write door (:mod:`.writes`: every write verb, under the ordered rules of
:mod:`.write_rules`), registrations across services (:mod:`.registrations`),
models, watchers, indexes, measures, search, downloads, training and learning
tasks; :mod:`.scope` wires them, each with the collaborators it uses.

Floor: client-side services, under the facade. May import ``jobs``, ``cluster``, ``tasks``,
``master``, ``store``, pure compute and the leaves; never the facade (no service holds a Collection).
"""
