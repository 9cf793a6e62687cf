"""The version of ftadapt, in a module of its own: every module may import it without importing the package facade
(``ftadapt/__init__.py``), which reaches into the core lazily."""
__version__ = "0.1.0"
