"""rqueue/_sync"""
