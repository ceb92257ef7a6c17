"""The contract between the edge and the workers: job kinds, statuses, queues and the job client."""
