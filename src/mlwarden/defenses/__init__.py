"""Defences that `mlwarden harden` applies. Training-time defences return a new Recipe."""
