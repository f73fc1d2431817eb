"""Workload: owns every side effect on the redis and sentinel containers.

Pebble layers and services, redis-server and redis-sentinel commands, and the
files they read all go through this package; nothing else in the charm touches
the workload. Placeholder: filled in as the machine's effects are implemented.
"""
