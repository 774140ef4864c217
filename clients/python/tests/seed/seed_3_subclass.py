from corral import Process

class MyProcess(Process):
    def run(self):
        print("Process running")

p = MyProcess()
p.start()
p.join()
