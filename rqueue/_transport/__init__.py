"""rqueue/_transport"""
