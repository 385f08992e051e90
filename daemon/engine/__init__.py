"""The engine: events in, runs out. Router, planner, approval gate, executor, schedules."""
