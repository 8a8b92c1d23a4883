"""Tiny Core Linux for the lab's gateway: its userland, extensions, kernel and Vagrant box."""
