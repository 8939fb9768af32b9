"""rqueue/_protocol"""
