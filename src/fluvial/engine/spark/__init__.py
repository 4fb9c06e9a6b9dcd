"""Runners on Apache Spark (PySpark): the batch layer and the speed layer beyond one machine.

Install with ``pip install 'fluvial[spark]'`` (PySpark, and Java 17 on the
machine).  Nothing here imports pyspark until a runner or session is made, so
``import fluvial`` stays light.
"""
