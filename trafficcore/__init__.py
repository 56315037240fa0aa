"""trafficcore: forecasts for every signalised intersection of a city, and what to do about them.

Layers look down only: data -> text -> models -> training/evaluation/explain; `signal` uses
only data and forecasts. Nothing here imports Streamlit.
"""

__version__ = "0.1.0"
