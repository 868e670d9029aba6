#!/usr/bin/env bash
# Task 2: the join handler only reports to the container's log; task 3 makes
# it record every event.
echo "serf handler: $SERF_EVENT"
cat
