"""trustyard: a container registry with trust built in."""

__version__ = "0.1.0"
