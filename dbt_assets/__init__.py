"""Dagster definitions for tomosight ("dbt" = digital breast tomosynthesis).

Kept free of imports at package level so that the command line stays fast.
"""
