"""Registry use cases: push, pull, list, delete, GC. No HTTP types, no concrete backends."""

from trustyard.registry.service import Registry, RegistryOptions

__all__ = ["Registry", "RegistryOptions"]
