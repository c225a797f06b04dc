"""The namespace authority (seed 003): signed statements linking keys to users and users to namespaces."""
