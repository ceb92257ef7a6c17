"""Switchyard: an AI API gateway built as a job-queue batch processing system.

This package holds what every layer shares: settings, the providers file, domain errors,
the embedded Redis and the command line.
"""
