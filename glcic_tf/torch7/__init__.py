"""The authors' released Torch7 networks: the .t7 serialization and the importer.

values (the Python values a .t7 file holds) -> reader (`load_t7`) / writer (`save_t7`, for tests)
-> completionnet (the layer checks) -> reference (a NumPy forward pass with Torch's semantics)
-> importer (`import_torch7`: a run directory); synthetic builds a file shaped like the released
ones for tests.
"""
