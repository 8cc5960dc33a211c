"""Streamlit pages for clinicians, researchers and admins."""
