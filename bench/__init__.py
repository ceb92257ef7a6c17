"""`make bench`: Switchyard's benchmarks, printed beside DESIGN.md's performance targets.

Modules:
- `loadgen`  a minimal HTTP/1.1 keep-alive client and load generator on raw asyncio streams.
- `cluster`  starts Redis, the stand-in upstream, web and workers as subprocesses on free
             ports, samples their CPU times from /proc, and always tears everything down.
- `probes`   the benchmark's own Redis observations (queue length, INFO counters, job states).
- `phases`   one function per figure of the performance table.
- `report`   the figures, the table and the JSON object.
- `run`      the order of the phases; `python -m bench` runs it.
"""
