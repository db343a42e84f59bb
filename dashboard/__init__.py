"""The ehflow Streamlit dashboard (layout and live session machinery; no maths)."""
