"""rqueue/_consumer"""
