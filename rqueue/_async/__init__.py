"""rqueue/_async"""
