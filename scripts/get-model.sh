#!/usr/bin/env bash
# Placeholder until the runtime lands: nothing to fetch yet.
exit 0
