"""The Python target: the printer of the emit program (``printer.py``); ``codegen.generate_python``
assembles the module from it and ``templates/python_module.py.j2``."""
