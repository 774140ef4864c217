from corral import Process, Value

def increment(val):
    val.value += 1

num = Value("i", 0)  # Shared integer
p = Process(target=increment, args=(num,))
p.start()
p.join()

print(num.value)  # Output: 1
