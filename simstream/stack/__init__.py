"""The embedded local stack: broker, Valkey and simstream's own services as child processes.

A development default (no Docker, no JVM). The Tansu broker keeps its log in
memory: stopping it loses every topic.
"""
