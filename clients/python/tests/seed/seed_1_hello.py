from corral import Process

def print_hello():
    print("Hello from process!")

process = Process(target=print_hello)
process.start()
process.join()  # Ensures the main program waits for the process to complete
