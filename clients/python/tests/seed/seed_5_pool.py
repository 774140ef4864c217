from corral import Pool

def square(n):
    return n * n

with Pool(processes=4) as pool:
    result = pool.map(square, [1, 2, 3, 4, 5])
    print(result)  # Output: [1, 4, 9, 16, 25]
