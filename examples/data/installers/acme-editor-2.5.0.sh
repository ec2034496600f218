#!/bin/sh
# Acme Editor 2.5.0 installer (a sample: the update offer in settings.toml
# names this file's SHA-256 and size; tests verify it against them).
echo "installing Acme Editor 2.5.0"
