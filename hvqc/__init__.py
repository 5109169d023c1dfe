"""hvqc"""
