"""Glue for training frameworks that need more than the DataLoader surface (imported where used)."""
