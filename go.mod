module github.com/genimg/genimg

go 1.26.0
