"""labctl: the appsight lab emulated with network namespaces on one Linux host.

The same topology as the Vagrant lab (a gateway that routes, NATs and serves DHCP to a phone
on an internal network) built from ``lab/lab.yml`` with network namespaces, veth pairs and a
Debian root filesystem per host, each host running its own sshd, so that the project's
Ansible playbooks and testinfra suite run against it unchanged.
"""
